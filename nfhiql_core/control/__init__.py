"""The control core: what the policy nodes decide, as plain Python (numpy only; no rclpy, no torch).

`replan` holds the one re-plan rule (planner, controller and `nfhiql eval` share it), `intake` the
checks every received vector passes (length, finiteness, stamp, names, clock skew, order), `safety`
the command filter (rate limit, bounds, finiteness, the safe command) and the OOD alarm, and
`controller` the controller's decisions: which observation and subgoal a command answers, and when
the safe command goes out instead. The ROS nodes only wire topics to these objects.
"""
