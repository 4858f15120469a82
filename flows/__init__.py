"""What the routes share beyond HTTP: the one inpainting plan and the geometry limits."""
