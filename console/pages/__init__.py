"""The console's pages, one module per audience: signing in and out, customers, admins."""
