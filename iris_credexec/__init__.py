"""iris-credexec: an executable-sourced credential for Workload Identity Federation."""

__version__ = "0.1.0"
