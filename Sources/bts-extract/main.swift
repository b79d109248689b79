import TTCommands

CommandMain.main(BtsExtractTool.self)
