"""What a token sees and the Completed Training Summary query (spec §17); no Flask here."""
