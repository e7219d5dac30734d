"""All manager logic, once, as generators that yield effects. No I/O here."""
