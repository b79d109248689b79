import TTCommands

TT.main()
