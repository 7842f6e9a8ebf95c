"""Trainers: one module per `config.trainer` name, each with the Task it trains."""
