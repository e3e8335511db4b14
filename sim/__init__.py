"""pushsim: rehearse push notifications against a simulated shopper population."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pushsim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
