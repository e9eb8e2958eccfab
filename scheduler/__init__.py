"""labq: a fair-share GPU scheduler for labs that share a small GPU cluster."""

__version__ = "0.1.0"
