"""nfhiql_core: NF-HIQL learning library (flows, agent, datasets, training, evaluation, deployment).

Pure Python + numpy (+ torch for training); never imports ROS.
"""

__version__ = "0.1.0"
