"""Operator commands: config, doctor, plan. They read the policy through policy.py and run
executable mode's own steps; none of them is on the path a client runs."""
