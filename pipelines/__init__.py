"""dxpipe pipelines: configuration, the pipeline factory, runners and the command line."""
