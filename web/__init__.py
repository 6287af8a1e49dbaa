"""The composition root: app factory, API routers, pages, templates, static files, CLI."""
