from vrnnkit.cli import main

main()
