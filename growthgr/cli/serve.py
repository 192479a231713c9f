"""`growthgr retrieve` (one request against the current release) and `growthgr serve` (the HTTP service)."""

from __future__ import annotations

import json

import typer


def retrieve_cmd(
    user: int = typer.Option(..., "--user", help="A registered user id."),
    query: str = typer.Option(..., "--query", help="The search query."),
    k: int | None = typer.Option(None, "--k", help="Items to return (default: serve.top_k_default)."),
    release: str = typer.Option("current", "--release", help="A release id, or 'current'."),
) -> None:
    """Top-k new items of the release for a user and a query, as JSON (what `GET /retrieve` answers)."""
    from foundation.releases import ReleaseError
    from growthgr.cli.context import settings
    from growthgr.serve import RequestError, Retriever, check_request, set_threads

    s = settings()
    try:
        q = check_request(s.serve, user, query, k)
        set_threads(s.serve)
        retriever = Retriever.load(s, release)
        items = retriever.retrieve([q])[0]
    except (RequestError, ReleaseError) as err:
        typer.secho(str(err), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"release_id": retriever.release_id, "user_id": q.user_id, "query": q.query, "k": q.k,
                           "items": items}, indent=2))


def serve_cmd(
    host: str | None = typer.Option(None, "--host", help="Bind address (default: serve.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: serve.port)."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request (uvicorn)."),
) -> None:
    """Serve `/retrieve`, `/healthz`, `/metrics` and OpenAPI docs (`/docs`) over the current release with
    uvicorn; follows `CURRENT` (hot reload)."""
    import uvicorn

    from growthgr.cli.context import settings
    from growthgr.serve import create_app

    s = settings()
    uvicorn.run(create_app(s), host=host or s.serve.host, port=s.serve.port if port is None else port,
                log_level="info", access_log=access_log)
