import TTCommands

CommandMain.main(BtsDumpTool.self)
