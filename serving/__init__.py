"""dxpipe serving: a TF Serving-compatible REST server (`dxpipe serve`), a client, and deployment manifests.

The modules that need TensorFlow (`serving.savedmodel`, `serving.server`) import it themselves; the client, the
command line and the JSON layer do not, so `dxpipe predict` starts in well under a second.
"""
