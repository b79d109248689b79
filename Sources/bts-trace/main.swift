import TTCommands

BtsTraceTool.main()
