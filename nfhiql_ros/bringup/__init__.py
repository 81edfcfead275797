"""`nfhiql-bringup`: cli (options, the run), supervisor (node processes), monitor (live ROS view), run_report."""
from nfhiql_ros.bringup.cli import main

__all__ = ["main"]
