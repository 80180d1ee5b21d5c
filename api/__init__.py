"""The whatsmyage HTTP service: FastAPI around `ml.Predictor`, with submissions kept in Postgres."""
