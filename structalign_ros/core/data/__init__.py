"""The data path: sensor messages -> windows -> bags -> datasets -> batches."""
