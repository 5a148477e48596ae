"""Code shared by the simulator, the Spark jobs and the local services."""
