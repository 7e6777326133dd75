"""pytest set-up shared by the unit tests and nbval's notebook runs."""


def pytest_collectstart(collector):
    # Notebooks print progress bars and warnings on stderr, which differ from run to run and machine
    # to machine; only stdout of cells marked NBVAL_CHECK_OUTPUT is compared. Widget and HTML
    # outputs (tqdm bars, animations) carry random ids.
    path = getattr(collector, "path", None)
    if path is not None and path.suffix == ".ipynb":
        collector.skip_compare += ("stderr", "text/html", "application/javascript",
                                   "application/vnd.jupyter.widget-view+json")
