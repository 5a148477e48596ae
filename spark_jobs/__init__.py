"""The Spark jobs of the speed and batch layers and the pure transformations they share."""
