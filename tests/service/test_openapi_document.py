"""The completed OpenAPI document is built once per route table and shared by equal apps."""

from __future__ import annotations

from service.app import create_app
from service.deps import TokenDep


def test_apps_with_the_same_routes_share_one_document() -> None:
    first, second = create_app(), create_app()
    assert first.openapi() is second.openapi()
    assert "/jobs" in first.openapi()["paths"]


def test_an_app_with_another_route_gets_its_own_document() -> None:
    plain, extended = create_app(), create_app()

    @extended.post("/extra-route", dependencies=[TokenDep])
    def extra_route() -> dict[str, str]:
        return {}

    assert extended.openapi() is not plain.openapi()
    assert "/extra-route" in extended.openapi()["paths"]
    assert "/extra-route" not in plain.openapi()["paths"]
    assert extended.openapi()["paths"]["/extra-route"]["post"]["security"]
