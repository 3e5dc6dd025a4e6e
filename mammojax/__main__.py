from mammojax.cli import run

run()
