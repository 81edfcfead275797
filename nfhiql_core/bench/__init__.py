"""`nfhiql bench`: training throughput, inference latency and bag conversion speed."""
