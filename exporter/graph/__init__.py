"""The graph stage: which TF graph a loaded model is exported from. A recognised BiT is re-authored into the edge
graph (``reauthor``); anything else goes as it is, with the GroupNorms it can prove liftable computed in 4-D
(``as_is``, ``graph_rewrite``)."""
