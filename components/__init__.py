"""Custom TFX components for dxpipe: each is a pure core plus a thin TFX shell."""


def __getattr__(name: str):
    """`components.RegistryVerdict`: the import path TFX's KFP v2 entrypoint reads from the type name.

    Resolved lazily, so importing a component does not import TFX's artifact types with the package.
    """
    if name == "RegistryVerdict":
        from components.registry_gate.component import RegistryVerdict

        return RegistryVerdict
    raise AttributeError(f"module 'components' has no attribute {name!r}")
