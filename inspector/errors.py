"""Errors the operator can act on: each message is one line saying what is wrong and what to do.

The CLI prints ``str(error)`` and exits non-zero; the GUI shows the same line in a dialog.
"""
from __future__ import annotations


class InspectorError(Exception):
    """Base class: anything with a message fit to show an operator as it is."""


class VideoError(InspectorError):
    """A video cannot be opened, has no frames, or stops decoding."""


class BundleError(InspectorError):
    """A model bundle is missing, corrupt, or does not fit the profile or head."""


class ProfileError(InspectorError):
    """A region profile cannot be read or is not valid."""


class StoreError(InspectorError):
    """The project store cannot be created, opened or written."""


class FaultLibraryError(InspectorError):
    """An examples file or a library change that cannot be carried out."""
