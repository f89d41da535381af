"""The built-in demo city (吉安示范片区), generated deterministically from a seed."""
