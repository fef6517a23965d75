"""What people run: compile and deploy, models, enclaves, requests, audit, the CLI."""


def version() -> str:
    """The installed splitseal's version (what `--version` prints and reports are stamped with)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("splitseal")
    except PackageNotFoundError:
        return "unknown (not installed)"
