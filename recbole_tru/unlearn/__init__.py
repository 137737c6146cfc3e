"""Unlearning: deletion requests, retained data, the methods (RecBole trainers) and the judge."""
