"""Example thkit plugin (see README.md)."""


def register() -> None:
    """Entry point of the ``thkit.plugins`` group: importing the module registers its parts."""
    from thkit_example_plugin import compensators, warpers  # noqa: F401
