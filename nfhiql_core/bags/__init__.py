"""rosbag2 recordings to training datasets, with the pure-Python `rosbags` package (no ROS)."""
