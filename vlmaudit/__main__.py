from vlmaudit.cli import main

main()
