"""What is learned: the model, its input kernels, the objectives and the training loop."""
