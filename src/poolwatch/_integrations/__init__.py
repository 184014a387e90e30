"""One adapter module per library; each translates that library's hooks into recorder facts."""
