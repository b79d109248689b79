import TTCommands

BtsTrace.main()
