import TTCommands

CommandMain.main(TT.self)
