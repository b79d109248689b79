import TTCommands

CommandMain.main(BtsTraceTool.self)
