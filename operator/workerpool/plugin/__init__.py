"""`kubectl workerpool`: the pool as the seed's GET /workers showed it, from a terminal."""
