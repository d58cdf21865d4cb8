def knn(*a, **k): pass
pairwise_l2 = pairwise_sqdist = knn
