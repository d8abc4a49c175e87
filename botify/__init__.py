"""The botify recommender service."""
