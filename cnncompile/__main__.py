from cnncompile.cli import main

main(prog_name="cnncompile")
