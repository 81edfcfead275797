"""nfhiql_ros: rclpy nodes over the nfhiql_core runtime (planner, controller, MuJoCo sim)."""
