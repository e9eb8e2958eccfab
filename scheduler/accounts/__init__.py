"""The account tree and its users as admins configure them (`tree`), and the pure planning of
an admin's change to it (`changes`)."""
