import TTCommands

BtsExtract.main()
