"""nfhiql_core: NF-HIQL learning library (flows, agent, datasets, training, evaluation).

Pure Python + torch + numpy; never imports ROS.
"""

__version__ = "0.1.0"
