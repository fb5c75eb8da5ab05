"""autointerp: label the features of a neural network and grade the labels."""
