from advocacy.cli import app

app()
