"""``app_packages``: frames of the named modules are the application's, even inside a library."""

from __future__ import annotations

from poolwatch import _sites
from poolwatch.demo import shop


def test_a_module_named_in_app_packages_is_the_application_s_inside_a_library_package() -> None:
    code = shop.handle_request.__code__
    plain = _sites.SiteCapture(limit=3)
    named = _sites.SiteCapture(limit=3, app_packages=["poolwatch.demo.shop"])
    assert plain.kind(code, shop.__name__) == _sites.LIBRARY
    assert named.kind(code, shop.__name__) == _sites.APP
    # by file too, when the frame's module is not known
    assert (
        _sites.SiteCapture(limit=3, app_packages=["poolwatch.demo.shop"]).kind(code) == _sites.APP
    )
    # the rest of poolwatch stays a library
    assert named.kind(_sites.describe.__code__, _sites.__name__) == _sites.LIBRARY


def test_a_package_covers_its_modules_and_an_unknown_name_is_ignored() -> None:
    named = _sites.SiteCapture(limit=3, app_packages=["poolwatch.demo", "no_such_module.x"])
    assert named.kind(shop.handle_request.__code__, shop.__name__) == _sites.APP
    assert named.apps == ("poolwatch.demo", "no_such_module.x")
