"""Throwaway local PostgreSQL and Redis servers (`servers`) and the `notifier dev` demo."""
