"""Reading a run back: the run record, charts, the HTML page, sensitivity and sparsity tables."""
