import TTCommands

BtsExtractTool.main()
